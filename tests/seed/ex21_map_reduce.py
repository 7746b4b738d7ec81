# Seed example 21: Map-Reduce 模式 (../shared/seed/tasks.md), verbatim.
import ray
from collections import Counter

ray.init()

@ray.remote
def map_fn(text):
    words = text.split()
    return Counter(words)

@ray.remote
def reduce_fn(counters):
    total = Counter()
    for c in counters:
        total.update(c)
    return total

texts = ["hello world", "hello ray", "world of distributed"]

map_refs = [map_fn.remote(text) for text in texts]
reduce_ref = reduce_fn.remote(map_refs)

print(ray.get(reduce_ref))

ray.shutdown()
