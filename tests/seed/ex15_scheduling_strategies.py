# Seed example 15: 调度策略 (../shared/seed/tasks.md), verbatim.
import ray

ray.init()

@ray.remote(scheduling_strategy="SPREAD")
def spread_task():
    return "Spread across nodes"

@ray.remote(scheduling_strategy="NODE_AFFINITY", 
            scheduling_strategy_node_id="node_id")
def affinity_task():
    return "Affinity to specific node"

ray.shutdown()
