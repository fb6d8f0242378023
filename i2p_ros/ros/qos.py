"""QoS profiles from the node's parameters (sensor-data style by default)."""

from __future__ import annotations

from typing import Any

__all__ = ["cloud_qos", "latency_qos"]


def cloud_qos(reliability: str, depth: int) -> Any:
    """Keep-last ``depth``, volatile; ``best_effort`` (like ``qos_profile_sensor_data``) or ``reliable``.

    A best-effort subscriber matches both kinds of publisher, so best-effort is the safe default for a
    LiDAR input; reliable makes sense on a lossless link where every frame matters (bag evaluation).
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    policies = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
    if reliability not in policies:
        raise ValueError(f"qos_reliability must be one of {sorted(policies)}, got {reliability!r}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=policies[reliability],
                      durability=DurabilityPolicy.VOLATILE)


def latency_qos(depth: int = 50) -> Any:
    """Reliable keep-last: small messages, and a reliable publisher matches every subscriber."""
    return cloud_qos("reliable", depth)
