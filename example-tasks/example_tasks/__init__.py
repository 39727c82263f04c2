"""The built-in task types, written as any team would write its own: one `@task` per module.

`file_processing` and `data_transformation` are the recipe's two task types. They are enabled
by default (TASK_MODULES=example_tasks); a deployment that lists its own modules in
TASK_MODULES adds `example_tasks` to keep them.
"""
