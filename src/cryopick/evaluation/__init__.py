"""Scoring picks: the CZII metric, matching, threshold tuning."""
