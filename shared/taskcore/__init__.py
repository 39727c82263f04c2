"""taskcore: the code the submit API and the job worker share.

Settings, the task envelope and typed task schemas, client factories, structured
logging, task status records and dead-letter operations.
"""
