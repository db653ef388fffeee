"""How busy an app is *right now*, from its sessions' buckets: the lag-free level a session is judged by.

Real LLM traffic bursts: the Azure code trace goes from nothing to 13 times its mean rate within ten
seconds. A session dealt its share of a burst is busy, not runaway, so its baseline is scaled by how far
the rest of its app runs above the app's own baseline (its *lift*). Read from the app's last closed
bucket, that level lags a burst by up to a bucket; kept here instead, in the app's peer state and fed by
every session bucket as it closes, it is current to the bucket being judged.

The state (inside the peer state, JSON): ``cw`` the last ``window_s`` of session traffic as
``[end, usd, requests]`` per bucket end; ``cu``/``cq`` decayed sums of the USD and requests that have
left the window (the app's baseline rates, see ``base.time_rate``); ``c0`` when tracking began; ``ct``
the time the sums reach.
"""

from __future__ import annotations

import math

from detectors.base import time_rate
from detectors.state import State


def add_traffic(
    peers: State,
    bucket: tuple[float, float, float, int],
    window_s: float,
    tau_s: float,
    *,
    owned: bool = False,
) -> None:
    """Fold one session bucket ``(start, end, usd, requests)`` into ``peers``: its window and baseline sums.

    Writes new values into ``peers`` (a copy the caller owns); lists inside are copied, not changed,
    unless ``owned`` (nothing else refers to them): then the window list is changed in place.

    >>> peers = {}
    >>> for t in range(0, 200, 2):
    ...     add_traffic(peers, (t - 2.0, float(t), 0.01, 1), 60.0, 1800.0)
    >>> window_sums(peers, 198.0)
    (0.3, 30)
    >>> round(time_rate(peers["cq"], peers["c0"], peers["ct"], 1800.0) * 60, 1)
    30.0
    """
    start, end, usd, requests = bucket
    window: list[list[float]] = peers.get("cw", []) if owned else list(peers.get("cw", ()))
    if "c0" not in peers:
        peers["c0"] = peers["ct"] = start
        peers["cu"] = peers["cq"] = 0.0
    peers["cw"] = window
    i = len(window)
    while i and window[i - 1][0] > end:
        i -= 1
    if i and window[i - 1][0] == end:
        usd0, req0 = window[i - 1][1], window[i - 1][2]
        window[i - 1] = [end, round(usd0 + usd, 7), req0 + requests]
    else:
        window.insert(i, [end, usd, requests])
    latest = window[-1][0]
    # the baseline sums learn traffic once it leaves the window, like the sessions' own baselines: the
    # minute being judged (a burst's, say) must not be in the level it is compared with
    drop = 0
    while drop < len(window) and window[drop][0] <= latest - window_s:
        when, old_usd, old_req = window[drop]
        when = max(when, peers["ct"])  # a late bucket is learned at the time the sums have reached
        decay = _decay(peers["ct"], when, tau_s)
        peers["cu"] = peers["cu"] * decay + old_usd
        peers["cq"] = peers["cq"] * decay + old_req
        peers["ct"] = when
        drop += 1
    if drop:
        del window[:drop]
    upto = latest - window_s
    if upto > peers["ct"]:
        decay = _decay(peers["ct"], upto, tau_s)
        peers["cu"] = peers["cu"] * decay
        peers["cq"] = peers["cq"] * decay
        peers["ct"] = upto


def _decay(last: float, now: float, tau_s: float) -> float:
    # the factor of base.decayed(), computed once for the USD and the request sums
    return math.exp(-max(0.0, now - last) / tau_s)


def window_sums(peers: State, end: float) -> tuple[float, int]:
    """Return the app's session USD and requests over the window ending at ``end`` (as tracked).

    >>> window_sums({"cw": [[10.0, 0.5, 2], [12.0, 0.25, 1]]}, 12.0)
    (0.75, 3)
    """
    usd, req = 0.0, 0
    for entry in peers.get("cw", ()):
        if entry[0] <= end:
            usd += entry[1]
            req += entry[2]
    return round(usd, 7), req


def lifts(
    peers: State | None,
    end: float,
    spans: list[tuple[float, float, int]],
    own_rates: tuple[float, float],
    window_s: float,
    tau_s: float,
) -> list[tuple[float, float]] | None:
    """Return ``(USD lift, request lift)`` of the rest of the app over each span before ``end``.

    ``spans`` holds ``(span_s, own_usd, own_requests)``: the judged session's traffic in that span;
    ``own_rates`` is its baseline USD and requests per second, so the session is taken out of both
    sides: a runaway never lifts its own bar. Unknown (None) until the baseline has learned a whole
    ``window_s``.

    >>> peers = {"cw": [[100.0, 4.0, 40]], "cu": 9.0, "cq": 90.0, "c0": 0.0, "ct": 90.0}
    >>> [[round(x, 2) for x in pair] for pair in lifts(peers, 102.0, [(10.0, 0.0, 0)], (0.0, 0.0), 10.0, 1e9)]
    [[4.0, 4.0]]
    >>> lifts({}, 10.0, [(10.0, 0.0, 0)], (0.0, 0.0), 10.0, 1e9) is None
    True
    """
    if not peers or "c0" not in peers or peers["ct"] - peers["c0"] < window_s:
        return None
    # buckets ending at ``end`` itself are still arriving (other sessions' may come after this one),
    # so the level is read over the complete part of each span, like the session's earlier buckets
    sums = [[0.0, 0] for _ in spans]
    for entry_end, usd, req in peers["cw"]:
        age = end - entry_end
        if age <= 0:
            continue
        for i, span in enumerate(spans):
            if age < span[0]:
                sums[i][0] += usd
                sums[i][1] += req
    base_usd = time_rate(peers["cu"], peers["c0"], peers["ct"], tau_s) - own_rates[0]
    base_req = time_rate(peers["cq"], peers["c0"], peers["ct"], tau_s) - own_rates[1]
    out = []
    for (span_s, own_usd, own_req), (usd, req) in zip(spans, sums, strict=True):
        lift_usd = (usd - own_usd) / (base_usd * span_s) if base_usd > 0 else 1.0
        lift_req = (req - own_req) / (base_req * span_s) if base_req > 0 else 1.0
        out.append((max(1.0, lift_usd), max(1.0, lift_req)))
    return out


def lift_between(
    peers: State | None,
    start: float,
    end: float,
    own_requests: int,
    own_rate: float,
    window_s: float,
    tau_s: float,
) -> float | None:
    """Return the request lift of the rest of the app over exactly ``(start, end]`` (>= 1).

    The app's session requests in buckets that ended in that stretch, without the judged session's
    ``own_requests``, against the app's baseline request rate without the session's ``own_rate``: how
    much of the session's count over those seconds its app explains. Only the tracked window counts;
    unknown (None) until the baseline has learned a whole ``window_s``, as for ``lifts``.

    >>> peers = {"cw": [[98.0, 1.0, 10], [100.0, 4.0, 40]], "cu": 9.0, "cq": 90.0, "c0": 0.0, "ct": 90.0}
    >>> round(lift_between(peers, 98.0, 100.0, 4, 0.0, 10.0, 1e9), 3)  # 36 others in 2 s, 1 a second
    18.0
    >>> round(lift_between(peers, 96.0, 98.0, 0, 0.0, 10.0, 1e9), 3)  # 10 in 2 s: 5 a second
    5.0
    >>> lift_between({}, 0.0, 1.0, 0, 0.0, 10.0, 1e9) is None
    True
    """
    if not peers or "c0" not in peers or peers["ct"] - peers["c0"] < window_s:
        return None
    base = time_rate(peers["cq"], peers["c0"], peers["ct"], tau_s) - own_rate
    if base <= 0 or end <= start:
        return 1.0
    req = 0
    for entry_end, _usd, n in peers["cw"]:
        if start < entry_end <= end:
            req += n
    return max(1.0, (req - own_requests) / (base * (end - start)))
