"""Several trafficd instances, one decision: shared observations, one leader, shared state.

Between the probers and the engine, when `coordination.backend` is not `none`.
Every instance publishes its latest observations under its vantage name (a TTL
of three intervals) and reads every vantage's, so the engine sees them all and
its quorum and abstain rules decide. One instance holds the lease (the leader);
only it runs the engine's transitions and the actuators, and it writes what the
engine and the ordering remember (site states, causes, timers, drain budget,
remembered replica counts) to the store with a write fenced by its token, so a
new leader continues where the old one stopped. Operators' overrides and the
pause are keys of their own, written by whichever instance took the command;
every instance also keeps them in its own state.json. The leader writes a
generation key beside them: a store that restarted empty has none, and the
leader then re-publishes the overrides and the pause it holds. An expired
override is removed only if it is still the one read (compare-and-delete), so an
operator's new one written meanwhile stays.

Losing the store: `leading()` turns false at once (a renewal that fails is a
lease that cannot be trusted), so nothing is actuated and nothing drains until
the store answers again; probing and metrics go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from trafficd.config.model import Config
from trafficd.coordination.base import SharedStore, SharedStoreError
from trafficd.model import Observation, Override, Pause

log = logging.getLogger(__name__)

FRESH_INTERVALS = 3  # observations older than this many intervals are unknown (docs/design.md)


class Coordinator:
    def __init__(
        self,
        config: Config,
        backend: SharedStore,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = config.coordination
        self.backend = backend
        self.kind = settings.backend
        self.vantage = config.vantage
        self.vantages = config.all_vantages
        self.lease = settings.lease
        self.interval = config.probes.interval
        self.clock, self.monotonic = clock, monotonic
        p = settings.key_prefix
        self.keys = {
            "obs": f"{p}obs/",
            "lock": f"{p}leader",
            "state": f"{p}state",
            "override": f"{p}override/",
            "pause": f"{p}pause",
            "generation": f"{p}generation",
        }
        self._override_raw: dict[str, str] = {}  # site -> the override as last read
        self.token: int | None = None  # while this instance leads
        self._lease_until = 0.0  # monotonic: our own bound on the lease we hold
        self.leader: tuple[str, int] | None = None  # who leads, as last read
        self.up = False
        self.error: str | None = None
        self.published: dict[str, float] = {}  # vantage -> when it last published

    def configure(self, config: Config) -> None:
        """A reload's configuration, with the same coordination settings and vantage (the
        runtime keeps the coordinator, and its lease, over such a reload)."""
        self.vantages = config.all_vantages
        self.interval = config.probes.interval

    # --- leadership ----------------------------------------------------------------

    def leading(self) -> bool:
        return self.token is not None and self.monotonic() < self._lease_until

    async def campaign(self) -> bool:
        """Take or renew the lease; True while this instance leads."""
        started = self.monotonic()
        token = await self.backend.campaign(self.keys["lock"], self.vantage, self.lease)
        if token is None:
            self.token = None
            self.leader = await self.backend.holder(self.keys["lock"])
            return False
        # The lease runs from when it was asked for, not from when the answer came.
        self.token, self._lease_until = token, started + self.lease
        self.leader = (self.vantage, token)
        return True

    async def still_leading(self) -> bool:
        """Checked right before every apply: the store must still say we lead."""
        if not self.leading():
            return False
        try:
            holder = await self.backend.holder(self.keys["lock"])
        except SharedStoreError:
            self.step_down("the store cannot be reached")
            return False
        if holder != (self.vantage, self.token):
            self.step_down(f"the lease is held by {holder[0] if holder else 'nobody'}")
            return False
        return True

    def step_down(self, why: str) -> None:
        if self.token is not None:
            log.warning("coordination: no longer the leader: %s", why)
        self.token = None

    def lost(self, exc: SharedStoreError) -> None:
        """The store failed: stop leading now, say it once."""
        if self.up or self.error is None:
            log.error("coordination: %s; not actuating until it answers", exc)
        self.up, self.error = False, str(exc)
        self.step_down(str(exc))

    def found(self) -> None:
        if not self.up and self.error is not None:
            log.info("coordination: the store answers again")
        self.up, self.error = True, None

    async def resign(self) -> None:
        if self.token is not None:
            token, self.token = self.token, None
            with contextlib.suppress(SharedStoreError):  # else it expires on its own
                await self.backend.resign(self.keys["lock"], self.vantage, token)

    # --- observations --------------------------------------------------------------

    async def publish(self, observations: Iterable[Observation]) -> None:
        doc = {"t": self.clock(), "observations": [o.to_json() for o in observations]}
        ttl = FRESH_INTERVALS * self.interval
        await self.backend.put(self.keys["obs"] + self.vantage, json.dumps(doc), ttl=ttl)

    async def observations(self) -> dict[str, list[Observation]]:
        """Every vantage's latest observations (vantages whose key expired are absent)."""
        out: dict[str, list[Observation]] = {}
        self.published = {}
        for key, raw in (await self.backend.scan(self.keys["obs"])).items():
            vantage = key.removeprefix(self.keys["obs"])
            try:
                doc = json.loads(raw)
                observations = [Observation.from_json(o) for o in doc["observations"]]
                self.published[vantage] = float(doc["t"])
            except (ValueError, KeyError, TypeError):
                log.warning("coordination: unreadable observations of vantage %s", vantage)
                continue
            out[vantage] = [o for o in observations if o.vantage == vantage]
        return out

    def fresh(self, vantage: str) -> bool:
        t = self.published.get(vantage)
        return t is not None and self.clock() - t <= FRESH_INTERVALS * self.interval

    # --- shared state --------------------------------------------------------------

    async def save_state(self, doc: Mapping[str, Any]) -> bool:
        """The leader's write, fenced: False (and stepped down) if the lease moved on."""
        if self.token is None:
            return False
        done = await self.backend.fenced_put(
            self.keys["lock"], self.vantage, self.token, self.keys["state"], json.dumps(doc)
        )
        if not done:
            self.step_down("a fenced write was refused: another instance leads")
        return done

    async def load_state(self) -> dict[str, Any] | None:
        raw = await self.backend.get(self.keys["state"])
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            log.warning("coordination: the shared state is unreadable; ignoring it")
            return None
        return doc if isinstance(doc, dict) else None

    async def put_override(self, site: str, override: Override | None) -> None:
        key = self.keys["override"] + site
        if override is None:
            await self.backend.delete(key)
        else:
            await self.backend.put(key, json.dumps(override.to_json()))

    async def overrides(self) -> dict[str, Override]:
        out = {}
        self._override_raw = {}
        for key, raw in (await self.backend.scan(self.keys["override"])).items():
            site = key.removeprefix(self.keys["override"])
            try:
                out[site] = Override.from_json(json.loads(raw))
            except ValueError:
                log.warning("coordination: unreadable override %s", key)
                continue
            self._override_raw[site] = raw
        return out

    async def expire_override(self, site: str) -> bool:
        """Remove `site`'s override only if it is still the one `overrides()` read:
        one written since (an operator's, through any instance) stays."""
        raw = self._override_raw.pop(site, None)
        if raw is None:
            return False
        return await self.backend.delete_if(self.keys["override"] + site, raw)

    async def generation(self) -> str | None:
        """The store's generation: None in a store that started empty."""
        return await self.backend.get(self.keys["generation"])

    async def republish(self, overrides: Mapping[str, Override], pause: Pause | None) -> str | None:
        """The leader's copy of the overrides and the pause into a store that came back
        empty, then a new generation (fenced): the new generation, or None if the lease
        moved on meanwhile."""
        for site, override in sorted(overrides.items()):
            await self.put_override(site, override)
        if pause is not None:
            await self.put_pause(pause)
        if self.token is None:
            return None
        generation = uuid.uuid4().hex
        done = await self.backend.fenced_put(
            self.keys["lock"], self.vantage, self.token, self.keys["generation"], generation
        )
        if not done:
            self.step_down("a fenced write was refused: another instance leads")
            return None
        return generation

    async def put_pause(self, pause: Pause | None) -> None:
        if pause is None:
            await self.backend.delete(self.keys["pause"])
        else:
            await self.backend.put(self.keys["pause"], json.dumps(pause.to_json()))

    async def pause(self) -> Pause | None:
        raw = await self.backend.get(self.keys["pause"])
        if raw is None:
            return None
        try:
            return Pause.from_json(json.loads(raw))
        except ValueError:
            log.warning("coordination: unreadable pause; ignoring it")
            return None

    def view(self) -> dict[str, Any]:
        """For `trafficd status`: who leads, and every vantage's freshness."""
        now = self.clock()
        return {
            "backend": self.kind,
            "up": self.up,
            "error": self.error,
            "leader": self.leader[0] if self.leader else None,
            "token": self.leader[1] if self.leader else None,
            "self": self.vantage,
            "vantages": {
                v: {
                    "fresh": self.fresh(v),
                    "age": round(now - self.published[v], 3) if v in self.published else None,
                }
                for v in self.vantages
            },
        }
