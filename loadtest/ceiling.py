"""Was it the server or the client? A load generator that shares the machine with the server measures
itself as much as the server once it nears its own ceiling, and takes CPU the server would have used.

The ceiling is the same generator, at the same concurrency, against loadtest.stub (a server that answers
at once): the most requests per second the generator can send and read here. A run that reached
LIMIT_SHARE of that ceiling was limited by the client, whatever the server could have done. The client's
CPU (seconds of CPU per second of the run, in cores) is what it took from a shared machine."""

from __future__ import annotations

from pydantic import BaseModel, Field

LIMIT_SHARE = 0.8  # a run at this share of the generator's own ceiling says more about the client than the server


class ClientCeiling(BaseModel):
    generator: str
    connections: int
    requests_per_s: float = Field(description="the generator's rate against the stub server")
    cpu_ms_per_request: float | None = Field(description="the generator's CPU time per request at that rate")
    seconds: float


class ClientView(BaseModel):
    """The load generator's side of a run."""

    generator: str = Field(description="e.g. 'aiohttp on uvloop (Python)' or 'wrk 4.1 + Lua'")
    cpu_s: float | None = Field(description="the generator's CPU time during the measured run")
    cpu_cores: float | None = Field(description="cpu_s / elapsed: cores the generator kept busy")
    ceiling: ClientCeiling | None = None
    share_of_ceiling: float | None = Field(None, description="answered requests/s over the ceiling's requests/s")
    limited: bool | None = Field(None, description=f"share_of_ceiling ≥ {LIMIT_SHARE}: the client, not the server, set the pace")

    def text(self) -> str:
        used = f"{self.cpu_cores:.2f} cores" if self.cpu_cores is not None else "CPU not measured"
        if self.ceiling is None:
            return f"client: {self.generator}, {used}; its ceiling was not measured"
        verdict = ("the CLIENT was the limit: the server may be faster than this" if self.limited
                   else "the server was the limit")
        return (f"client: {self.generator}, {used}; {self.share_of_ceiling:.0%} of its own ceiling of "
                f"{self.ceiling.requests_per_s:,.0f} requests/s ({self.ceiling.connections} connection{'s' * (self.ceiling.connections != 1)} against a stub "
                f"server): {verdict}")


def client_view(generator: str, cpu_s: float | None, elapsed_s: float, requests_per_s: float,
                ceiling: ClientCeiling | None) -> ClientView:
    share = requests_per_s / ceiling.requests_per_s if ceiling and ceiling.requests_per_s else None
    return ClientView(generator=generator, cpu_s=None if cpu_s is None else round(cpu_s, 3),
                      cpu_cores=None if cpu_s is None or not elapsed_s else round(cpu_s / elapsed_s, 3),
                      ceiling=ceiling, share_of_ceiling=None if share is None else round(share, 4),
                      limited=None if share is None else share >= LIMIT_SHARE)
