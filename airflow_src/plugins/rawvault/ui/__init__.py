"""The Backups page: a read-only view of raw files and their backups inside the Airflow UI.

``queries`` validates the filters and turns documents into rows (the MongoDB
queries are in ``shared.db.backups_view``), ``api`` the FastAPI app that
the ``rawvault`` plugin (``airflow_src/plugins/rawvault_ui_plugin.py``) mounts,
and ``page.html`` the self-contained page it serves.
"""
