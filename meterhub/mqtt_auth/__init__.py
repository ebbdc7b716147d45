"""Device authentication on the MQTT broker: gateway credentials, topic rules, the embedded broker's plugin
and the password/ACL files for Mosquitto (see ``docs/mqtt_auth.md``)."""
