"""https and tls listeners mapped onto AWS: ACM certificates, SslPolicy, listener certificates, NLB TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fivenines.certs import read_materials
from fivenines.cloud.mapping import map_spec
from fivenines.cloud.plan import Action, Observed, Op, diff, steps
from fivenines.cloud.resources import Kind, Network, Resource, Subnet
from fivenines.core.tls import CertificateMaterial
from fivenines.spec import Spec, parse_spec
from tests.tls_helpers import issue, make_ca

NET = Network("vpc-1", (Subnet("subnet-a", "eu-west-1a", "vpc-1"), Subnet("subnet-b", "eu-west-1b", "vpc-1")))
ARN = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"


def material(fp: str, domain: str) -> CertificateMaterial:
    return CertificateMaterial(fp * 4, domain, b"CERT", b"", b"KEY")


MATERIALS = {"site.pem": material("a" * 16, "example.test"), "api.pem": material("b" * 16, "api.example.test")}


def spec(*listeners: dict[str, Any]) -> Spec:
    return parse_spec({"name": "shop", "listeners": list(listeners),
                       "target_groups": {"web": {"targets": ["10.0.1.5:80"]}, "db": {"targets": ["10.0.1.6:5432"]}}})


HTTPS = {"port": 443, "protocol": "https", "default_target_group": "web",
         "certificates": [{"cert": "site.pem", "key": "site.key"}, {"cert": "api.pem", "key": "api.key", "default": True},
                          {"cert": "x.pem", "key": "x.key", "arn": ARN}]}


def test_https_listener_imports_certificates_and_names_the_policy() -> None:
    d = map_spec(spec(HTTPS), NET, MATERIALS)
    assert d.blocking(adjust=False) == []
    certs = {k: r for k, r in d.resources.items() if r.kind is Kind.CERTIFICATE}
    assert sorted(certs) == ["cert/" + "a" * 16, "cert/" + "b" * 16]
    assert certs["cert/" + "a" * 16].props == {"fingerprint": "a" * 64, "domain": "example.test"}
    assert certs["cert/" + "a" * 16].payload is MATERIALS["site.pem"]
    assert "KEY" not in repr(certs["cert/" + "a" * 16])
    li = d.resources["listener/443"].props
    assert li["protocol"] == "HTTPS" and li["load_balancer"] == "@lb/alb"
    assert li["ssl_policy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert li["certificate"] == "@cert/" + "b" * 16  # the default: marked default, not the first
    assert li["extra_certificates"] == sorted([ARN, "@cert/" + "a" * 16])
    assert d.resources["tg/web"].props["protocol"] == "HTTP"  # the ALB terminates TLS and forwards HTTP


def test_tls_listeners_go_to_the_nlb() -> None:
    tls = {"port": 6443, "protocol": "tls", "default_target_group": "db", "ssl_policy": "ELBSecurityPolicy-TLS13-1-3-2021-06",
           "certificates": [{"cert": "site.pem", "key": "site.key"}]}
    passthrough = {"port": 7443, "protocol": "tls", "default_target_group": "db", "passthrough": True}
    d = map_spec(spec(tls, passthrough), NET, MATERIALS)
    assert d.blocking(adjust=False) == []
    assert d.resources["listener/6443"].props["protocol"] == "TLS"
    assert d.resources["listener/6443"].props["ssl_policy"] == "ELBSecurityPolicy-TLS13-1-3-2021-06"
    assert d.resources["listener/6443"].props["extra_certificates"] == []
    assert d.resources["listener/7443"].props == {"load_balancer": "@lb/nlb", "port": 7443, "protocol": "TCP",
                                                  "default_action": d.resources["listener/7443"].props["default_action"]}
    assert d.resources["tg/db"].props["protocol"] == "TCP" and "lb/alb" not in d.resources


def test_what_aws_cannot_take() -> None:
    sni = {"port": 7443, "protocol": "tls", "default_target_group": "db", "passthrough": True,
           "rules": [{"match": {"sni": ["a.test"]}, "forward": "web"}]}
    mtls = {**HTTPS, "port": 0, "mutual_authentication": {"mode": "passthrough"}, "session_tickets": {"rotation": "2h"}}
    d = map_spec(spec(sni, mtls), NET, {"site.pem": MATERIALS["site.pem"]})
    found = {f.path: f for f in d.findings}
    assert found["listeners.0.rules"].nearest is None and "routes no connection by SNI" in found["listeners.0.rules"].message
    assert found["listeners.1.port"].nearest == "443"
    assert found["listeners.1.mutual_authentication"].blocks(adjust=True)
    assert "cannot be read to import into ACM" in found["listeners.1.certificates.1.cert"].message
    assert any("issues and rotates its own ticket keys" in n for n in d.notes)
    assert not any(r.kind is Kind.RULE for r in d.resources.values())


def test_new_files_replace_the_certificate_and_delete_the_old_one_last() -> None:
    before = map_spec(spec(HTTPS), NET, MATERIALS)
    renewed = dict(MATERIALS, **{"api.pem": material("c" * 16, "api.example.test")})
    after = map_spec(spec(HTTPS), NET, renewed)
    observed = {k: Observed(Resource(r.kind, k, r.name, r.props), f"id-{k}") for k, r in before.resources.items()}
    plan = diff("shop", after.resources, observed)
    changes = {c.key: c.action for c in plan.changes}
    assert changes == {"cert/" + "c" * 16: Action.CREATE, "listener/443": Action.UPDATE, "cert/" + "b" * 16: Action.DELETE}
    order = [(s.op, s.change.key) for s in steps(plan, after.resources, observed)]
    assert order == [(Op.CREATE, "cert/" + "c" * 16), (Op.UPDATE, "listener/443"), (Op.DELETE, "cert/" + "b" * 16)]


def test_materials_are_read_from_the_files(tmp_path: Path) -> None:
    ca = make_ca()
    issue(ca, ["example.test"]).write(tmp_path, "site", chain=(ca,))
    got = read_materials(spec({**HTTPS, "certificates": [{"cert": "site.pem", "key": "site.key"},
                                                         {"cert": "gone.pem", "key": "gone.key"}]}), tmp_path)
    assert list(got) == ["site.pem"]
    m = got["site.pem"]
    assert m.domain == "example.test" and len(m.fingerprint) == 64 and m.chain == ca.pem()
    assert m.certificate.startswith(b"-----BEGIN CERTIFICATE-----") and b"PRIVATE KEY" in m.private_key
    assert "PRIVATE" not in repr(m)


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_plain_listeners_carry_no_tls_properties(protocol: str) -> None:
    d = map_spec(spec({"port": 8080, "protocol": protocol, "default_target_group": "db"}), NET)
    assert "ssl_policy" not in d.resources["listener/8080"].props
