"""sigstream's pure domain core.

Nothing in this package does I/O, reads the wall clock or imports a heavy framework
(faust, redis, websockets, torch, transformers, peft, ccxt). Live, replay and backtest all
drive the same objects defined here; adapters/ connect them to the outside world.
"""
