# Seed example 18: 批处理 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote
def process_single(item):
    return item * 2

@ray.remote
def process_batch(items):
    return [item * 2 for item in items]

data = list(range(1000))

refs = [process_single.remote(item) for item in data]
results = ray.get(refs)

batch_size = 100
batches = [data[i:i+batch_size] for i in range(0, len(data), batch_size)]
refs = [process_batch.remote(batch) for batch in batches]
results = [item for batch in ray.get(refs) for item in batch]

ray.shutdown()
