"""What the figures were measured on: the CPU, its cores, the servers' versions, and how busy
the machine was (other work beside the benchmark moves every figure)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text


def cpu_model() -> str:
    """The first `model name` of /proc/cpuinfo (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(database_url: str, redis_url: str) -> dict[str, Any]:
    engine = create_engine(database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            postgres = connection.scalar(text("SHOW server_version"))
    finally:
        engine.dispose()
    client = redis.Redis.from_url(redis_url)
    try:
        redis_version = client.info("server")["redis_version"]
    finally:
        client.close()
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "host": platform.node(),
        "postgres": postgres,
        "redis": redis_version,
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages now."""
    return [round(value, 2) for value in os.getloadavg()]
