"""Core data types and conventions: particle types, coordinates, the picks table, errors."""
