# The official Airflow image with this provider installed from its wheel.
#
#   python -m build --wheel --outdir dist .      # the wheel the image installs
#   docker compose build                         # or: docker build -f docker/airflow.Dockerfile -t airflow-dcache .
#
# The same image runs the Airflow components and the bundled dCache-compatible sites of the compose
# stack; a production image would leave out the [server] extra.
FROM apache/airflow:3.3.2

USER root
# Data and generated credentials of the compose stack's service sites (a named volume takes this
# ownership when it is first created).
RUN mkdir -p /dcache && chown 50000:0 /dcache && chmod 0770 /dcache
USER airflow

ARG PROVIDER_EXTRAS=kafka,docker,hdf5,ui,server
COPY dist/ /tmp/dist/
# Pin Airflow to the image's own version so resolving the provider never up- or downgrades it.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
        "$(ls /tmp/dist/airflow_dcache-*.whl | head -n 1)[${PROVIDER_EXTRAS}]" \
    && airflow providers get airflow-dcache >/dev/null
COPY docker/init_dcache.py /opt/airflow-dcache/init_dcache.py
