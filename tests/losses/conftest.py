"""tests/losses: Classic AT, TRADES (memory-saving), the official TRADES attack, the regularizers."""
