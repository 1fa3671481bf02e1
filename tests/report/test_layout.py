"""The report's view of a deployment (trafficd/report/layout.py): which actuators carry
each site's weight, read from a configuration file as `trafficd report` does (secrets
left unresolved) and from a loaded one as `simulate --report` does."""

from __future__ import annotations

from pathlib import Path

from trafficd.config.loader import load
from trafficd.report.layout import Layout, read_layout

CONFIG = """\
vantage: v1
storage:
  eustorage: [LocalStorage, {storage_path: /eu}]
sites:
  eu: {url: "https://quay.example.com", connect: "192.0.2.20:443", storage: [eustorage],
       addresses: [192.0.2.20], haproxy: {backend: quay, server: eu}}
actuators:
  - {type: haproxy, id: lb, sockets: [/run/haproxy.sock]}
  - {type: powerdns, id: lua, api_url: "http://127.0.0.1:8081", api_key: "${env:PDNS_KEY}",
     zone: example.com., name: quay.example.com., weighted: true}
  - {type: powerdns, id: plain, api_url: "http://127.0.0.1:8081", api_key: "${env:PDNS_KEY}",
     zone: example.com., name: quay.example.com.}
"""


def test_the_actuators_that_carry_weights(tmp_path: Path) -> None:
    path = tmp_path / "trafficd.yaml"
    path.write_text(CONFIG)
    want = {"lb": True, "lua": True, "plain": False}
    assert {a.ident: a.weighted for a in read_layout(path).actuators} == want
    loaded = Layout.from_config(load(path, environ={"PDNS_KEY": "k"}))
    assert {a.ident: a.weighted for a in loaded.actuators} == want
