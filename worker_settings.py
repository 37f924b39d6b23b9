"""arq's entry point (the Procfile's ``worker: arq worker_settings.WorkerSettings``): a bag of options.

Settings are read from the environment here because this module is where the worker process starts.
"""

from service.core.settings import Settings
from service.worker.options import worker_options

WorkerSettings = worker_options(Settings())
