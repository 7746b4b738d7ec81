# Seed example 19: 使用 ray.put (../shared/seed/tasks.md), verbatim.
import ray
import numpy as np

ray.init()

large_data = np.random.rand(10000, 10000)
data_ref = ray.put(large_data)

@ray.remote
def process(data_ref, idx):
    data = ray.get(data_ref)
    return data[idx, 0]

refs = [process.remote(data_ref, i) for i in range(100)]

ray.shutdown()
