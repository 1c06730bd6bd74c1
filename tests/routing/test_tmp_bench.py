import time, statistics
from sqlalchemy import select
from shared.messaging_tables import outbox
from shared.events import RoutingType, parse_time
from shared.topics import Topics
from tests.routing.helpers import config, lead, publish, qualified, running
from tests.support import make_settings, wait_for

CFG = config(sla={"warn_fraction": 0.5, "default_policy": "hot",
                  "policies": {"hot": {"business_seconds": 3}}},
             escalation={"notify_manager": False, "ladder": ["none"]})

async def test_bench(kafka_bootstrap, db_url):
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    n = 500
    async with running(settings, CFG) as (app, client):
        t0 = time.monotonic()
        await publish(app, topics.leads, [qualified(lead("DE")) for _ in range(n)])
        async def rows():
            async with app.state.runtime.engine.connect() as conn:
                return [dict(r._mapping) for r in (await conn.execute(select(outbox).where(outbox.c.source=="routing", outbox.c.ce_type.like("io.leadflow.routing.%")))).all()]
        async def assigned():
            return sum(r["ce_type"] == RoutingType.ASSIGNED for r in await rows()) >= n
        await wait_for(assigned, timeout=60)
        t1 = time.monotonic()
        async def breached():
            return sum(r["ce_type"] == RoutingType.SLA_BREACHED for r in await rows()) >= n
        await wait_for(breached, timeout=60)
        lags = [(r["created_at"] - parse_time(r["data"]["at"])).total_seconds() for r in await rows() if r["ce_type"] in (RoutingType.SLA_WARNING, RoutingType.SLA_BREACHED)]
        lags.sort()
        print(f"\n{db_url.split(':')[0]}: {n} leads assigned in {t1-t0:.2f}s ({n/(t1-t0):.0f}/s); timer lag median {statistics.median(lags)*1000:.0f} ms, p90 {lags[int(.9*len(lags))]*1000:.0f} ms, max {lags[-1]*1000:.0f} ms over {len(lags)} timers")
