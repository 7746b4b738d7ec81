# Seed example 24: 日志记录 (../shared/seed/tasks.md), verbatim.
import ray
import logging

ray.init()

@ray.remote
def logged_task(x):
    logging.basicConfig(level=logging.INFO)
    logging.info(f"Processing {x}")
    return x * 2

ray.get(logged_task.remote(10))

ray.shutdown()
