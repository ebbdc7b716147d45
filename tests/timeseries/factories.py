"""Test factories: a gateway with devices and meters, created as the service role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from meterhub.db import service_session
from meterhub.devices.models import Device, Gateway, Meter


@dataclass
class Fleet:
    group_id: int
    gateway_id: int
    client_id: str
    device_ids: list[int]
    meter_ids: list[int]  # one per (device, channel), in creation order


def make_fleet(app, tenant, devices: int = 1, channels: int = 1, framing: str = "mqtt",
               utility: str = "electricity") -> Fleet:
    """Create one gateway of ``tenant``'s first property with ``devices`` devices of ``channels`` meters."""
    marker = uuid.uuid4().hex[:8]
    with app.app_context(), service_session() as s:
        gw = Gateway(group_id=tenant.group_id, property_id=tenant.property_id, name=f"gw-{marker}",
                     framing=framing, mqtt_client_id=f"gw-{marker}")
        s.add(gw)
        s.flush()
        device_ids, meter_ids = [], []
        for d in range(1, devices + 1):
            dev = Device(group_id=tenant.group_id, property_id=tenant.property_id, gateway_id=gw.id,
                         driver_key="test", address=str(d), serial=f"{marker}-{d}")
            s.add(dev)
            s.flush()
            device_ids.append(dev.id)
            for ch in range(1, channels + 1):
                meter = Meter(group_id=tenant.group_id, property_id=tenant.property_id, device_id=dev.id,
                              channel=ch, utility=utility, room_id=tenant.room_id)
                s.add(meter)
                s.flush()
                meter_ids.append(meter.id)
        return Fleet(tenant.group_id, gw.id, gw.mqtt_client_id, device_ids, meter_ids)
