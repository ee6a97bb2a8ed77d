"""Alerts: tell a person once per change of state, through Airflow's notifiers (e-mail, Slack, JSON webhook).

- :mod:`.model`: what a check observes about a subject (:class:`~.model.Observation`) and the message it sends.
- :mod:`.raw_files`: THE rules that turn a raw file's state into an alert state
  (:func:`~.raw_files.raw_file_alert_state`; a new state is one rule there) and the task-log links.
- :mod:`.disks`: low free space on the instrument folders and the backup root.
- :mod:`.reconcile`: compares observations with the ledger (``shared.db.alerts``) and records the changes:
  one per subject per change of state, recoveries once, a first-check baseline and storms as one summary.
- :mod:`.delivery`: sends pending messages, one claimed delivery per channel, a failing channel never raises.
- :mod:`.render`: a message as e-mail (subject, HTML), Slack text and webhook JSON.
- :mod:`.digest`: the daily digest's content.
- :mod:`.check`: the two use cases, one alert check and one digest.
- :mod:`.channels`: the only Airflow-dependent module: the providers' notifiers, secrets kept out of logs.

Everything but :mod:`.channels` is plain Python over ``shared.db`` and ``Settings``.
"""
