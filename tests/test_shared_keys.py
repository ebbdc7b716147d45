"""Every process of a deployment signs with the same keys: a web or worker process whose SECRET_KEY or AUDIT_KEY
differs from the one another process published says so (issue 18 item 3)."""

from __future__ import annotations

import logging
import uuid

from meterhub.app import create_app
from meterhub.shared_keys import check_shared_keys, fingerprint
from tests.conftest import _config


def test_a_process_with_another_secret_key_is_reported(database_url, service_urls, caplog):
    namespace = f"meterhub-keys-{uuid.uuid4().hex[:8]}"

    def process(secret: str):
        return create_app({**_config(database_url, service_urls), "REDIS_NAMESPACE": namespace, "SECRET_KEY": secret})

    assert check_shared_keys(process("the shared secret key 0123456789")) == []
    assert check_shared_keys(process("the shared secret key 0123456789")) == []  # the same key on another host
    with caplog.at_level(logging.ERROR, logger="meterhub.shared_keys"):
        assert check_shared_keys(process("a key generated on this host only")) == ["SECRET_KEY"]
    assert "METERHUB_SECRET_KEY" in caplog.text and "a key generated" not in caplog.text  # never the key itself
    assert fingerprint("a") != fingerprint("b") and len(fingerprint("a")) == 16
