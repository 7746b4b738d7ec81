# Seed example 08: CPU 资源 (../shared/seed/tasks.md), verbatim.
import ray

ray.init(num_cpus=4)

@ray.remote(num_cpus=2)
def cpu_intensive():
    import time
    time.sleep(1)
    return "CPU task done"

refs = [cpu_intensive.remote() for _ in range(4)]

results = ray.get(refs)
print(results)

ray.shutdown()
