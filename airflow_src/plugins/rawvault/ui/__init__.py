"""The Backups page: a read-only view of raw files and their backups inside the Airflow UI.

``queries`` holds the plain mongoengine queries, ``api`` the FastAPI app that
the ``rawvault`` plugin (``airflow_src/plugins/rawvault_ui_plugin.py``) mounts,
and ``page.html`` the self-contained page it serves.
"""
