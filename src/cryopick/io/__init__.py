"""Reading and writing tomograms and picks."""
