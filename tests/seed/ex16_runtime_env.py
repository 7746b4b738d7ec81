# Seed example 16: 运行时环境 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote(runtime_env={"pip": ["pandas==2.0.0"]})
def task_with_deps():
    import pandas as pd
    return pd.__version__

print(ray.get(task_with_deps.remote()))

ray.shutdown()
