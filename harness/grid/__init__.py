"""The grid: a manifest's specs as jobs, run by an executor (local or Ray) under one driver.

* :mod:`.expand`: the manifest's experiments -> one spec per cell (torch-free);
* :mod:`.jobs`: dense pre-trainings and pruning runs behind one interface, and the plan of a grid's jobs;
* :mod:`.describe`: what MLflow shows about a job (names, tags, descriptions);
* :mod:`.execute`: the driver (claims, replays, pre-flight, phases); :mod:`.options` its inputs and outputs;
* :mod:`.local`, :mod:`.ray`: the executors; :mod:`.cluster`: talking to a Ray cluster.
"""
