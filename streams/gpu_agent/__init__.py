"""``burnwatch gpu-agent``: read a GPU node's usage every interval and publish one ``gpu.sample``.

Sources (``dcgm``, ``nvidia_smi``, ``nvml``) turn the node's GPUs into ``GpuReading`` values;
``sample`` makes the event; ``disk_queue`` keeps every sample on local disk until Kafka has
acknowledged it; ``agent`` runs the two loops (sample, ship). See docs/collectors/gpu-agent.md.
"""
