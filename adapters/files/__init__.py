"""Files: JSONL(.gz) recordings, kline and news CSVs in; JSONL features, signals, dead letters out."""
