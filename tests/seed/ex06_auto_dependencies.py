# Seed example 06: 自动依赖解析 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote
def load_data():
    return [1, 2, 3, 4, 5]

@ray.remote
def process_data(data):
    return [x * 2 for x in data]

@ray.remote
def aggregate(results):
    return sum(results)

data_ref = load_data.remote()
processed_ref = process_data.remote(data_ref)
result_ref = aggregate.remote([processed_ref])

print(ray.get(result_ref))

ray.shutdown()
