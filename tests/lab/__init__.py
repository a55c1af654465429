"""Lab topologies the tests and the benchmarks use beside the demo's (`exporter.demo.lab`).

`scale.py`: one initiator charon holding many connections (bench/scale.py, bench/soak.py,
the model-correctness test); `rekey.py`: clients that rekey often (the event-stream tests).
"""
