"""One composition room per mode: run (live), worker (faust), replay, publish (onto Kafka), backtest, bench, train.

Each room wires engine/ to the adapters that mode needs; sigstream/commands/ only parses flags and calls one.
"""
