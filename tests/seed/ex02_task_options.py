# Seed example 02: Task 配置选项 (../shared/seed/tasks.md), verbatim.
@ray.remote(
    num_cpus=2,
    num_gpus=1,
    memory=1024 * 1024 * 1024,
    max_retries=3,
    retry_exceptions=True,
    runtime_env={"pip": ["numpy"]}
)
def complex_task(data):
    import numpy as np
    return np.mean(data)
