"""rawvault's pipeline logic: plain functions the DAGs wire into tasks.

Modules here know nothing of Airflow except ``rawvault.impl`` (task callables
that read the Airflow context and call the plain functions) and
``rawvault.s3.client`` (credentials from an Airflow connection).
"""
