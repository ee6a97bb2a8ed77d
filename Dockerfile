# rawvault's Airflow image: the official Apache Airflow image plus rawvault's pinned
# runtime requirements, DAGs, plugin, shared package and environment YAML files.
# Used by every Airflow service in docker-compose.yaml (`docker compose build`).
#
# Layout inside the image (the repository layout, rooted at /opt/airflow/rawvault):
#   /opt/airflow/rawvault/airflow_src/dags      AIRFLOW__CORE__DAGS_FOLDER
#   /opt/airflow/rawvault/airflow_src/plugins   AIRFLOW__CORE__PLUGINS_FOLDER (package `rawvault`)
#   /opt/airflow/rawvault/shared                package `shared` (settings, DB models)
#   /opt/airflow/rawvault/envs                  rawvault.<env>.yaml, selected by RAWVAULT_ENV
# PYTHONPATH holds the repository root and the plugins folder, so `shared` and `rawvault`
# import in every process (scheduler, DAG processor, Celery workers and their task runners).

# Keep the Airflow version equal to apache-airflow in requirements_airflow.txt
# (tests/integration/test_compose.py checks it).
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

# The official image installs Python packages as the airflow user (never as root).
USER airflow
WORKDIR /opt/airflow

COPY --chown=airflow:0 requirements_airflow.txt constraints.txt /opt/airflow/rawvault/
RUN pip install --no-cache-dir \
        -r /opt/airflow/rawvault/requirements_airflow.txt \
        -c /opt/airflow/rawvault/constraints.txt

COPY --chown=airflow:0 shared /opt/airflow/rawvault/shared
COPY --chown=airflow:0 envs /opt/airflow/rawvault/envs
COPY --chown=airflow:0 airflow_src/dags /opt/airflow/rawvault/airflow_src/dags
COPY --chown=airflow:0 airflow_src/plugins /opt/airflow/rawvault/airflow_src/plugins

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/rawvault/airflow_src/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/rawvault/airflow_src/plugins \
    PYTHONPATH=/opt/airflow/rawvault:/opt/airflow/rawvault/airflow_src/plugins \
    RAWVAULT_ENV=production

# /opt/airflow/auth holds the UI login file (a named volume in docker-compose.yaml);
# group 0 and group-write so the container runs under any AIRFLOW_UID (official image rule).
# The import and settings checks fail the build rather than the first task.
RUN umask 0002 \
    && mkdir -p /opt/airflow/auth \
    && chmod 2770 /opt/airflow/auth \
    && python -c "import rawvault.impl.dag_defaults, shared.db.interface" \
    && python -c "from shared.settings import load_settings; print('valid:', load_settings().source)"
