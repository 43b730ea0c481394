"""The autoscaler model benchmarks/autoscale.py picks the chart's defaults with: it must compute
what Kubernetes' HPA controller computes (tolerance, stabilisation windows, rate policies), or
the defaults it picks are wrong."""

from __future__ import annotations

from benchmarks.autoscale import HPA, Cluster, Demand, Policy, hourly_schedule, simulate


def test_within_ten_percent_of_target_nothing_changes():
    hpa = HPA(Policy("p", target_utilisation=0.5, up_window_s=0, down_window_s=0), capacity=10)
    assert hpa.desired(0, current=10, usage=54, floor=0) == 10  # ratio 1.08
    assert hpa.desired(15, current=10, usage=56, floor=0) == 12  # ratio 1.12: ceil(56/5)


def test_scale_up_is_limited_by_the_larger_policy_per_period():
    hpa = HPA(Policy("p", up_percent=100, up_pods=4, up_period_s=15, max_replicas=100),
              capacity=10)
    # from 2 replicas: max(2 x 200 %, 2 + 4) = 6, however many the metric asks for
    assert hpa.desired(0, current=2, usage=700, floor=0) == 6
    assert hpa.desired(5, current=6, usage=700, floor=0) == 6, "same period: no more"
    assert hpa.desired(15, current=6, usage=700, floor=0) == 12  # next period: 6 x 200 %


def test_scale_down_waits_out_its_window_then_goes_one_pod_at_a_time():
    hpa = HPA(Policy("p", target_utilisation=1.0, down_window_s=600, down_percent=None,
                     down_pods=1, down_period_s=120, min_replicas=1), capacity=10)
    assert hpa.desired(0, current=10, usage=100, floor=0) == 10
    assert hpa.desired(15, current=10, usage=10, floor=0) == 10, "the window remembers 10"
    assert hpa.desired(615, current=10, usage=10, floor=0) == 9
    assert hpa.desired(630, current=9, usage=10, floor=0) == 9, "one pod per 120 s"
    assert hpa.desired(740, current=9, usage=10, floor=0) == 8


def test_a_floor_holds_the_pool_and_min_max_clamp():
    hpa = HPA(Policy("p", min_replicas=2, max_replicas=5, up_pods=10), capacity=10)
    assert hpa.desired(0, current=2, usage=0, floor=4) == 4
    assert hpa.desired(15, current=4, usage=10_000, floor=0) == 5


def test_a_static_pool_for_the_peak_seats_everyone_and_floors_from_another_day_help():
    lessons = Demand(spike_lessons=0).lessons()
    cluster = Cluster()
    static = simulate(Policy("static", static=30), cluster, lessons)
    assert static["joins_refused_first_try"] == 0 and static["lessons_lost"] == 0
    assert static["gpu_hours"] == 30 * 24
    reactive = simulate(Policy("r", min_replicas=2, down_window_s=600, down_percent=None,
                               down_pods=1, down_period_s=120), cluster, lessons)
    floors = hourly_schedule(Demand(seed=8, spike_lessons=0).lessons(), cluster.capacity)
    planned = simulate(Policy("f", min_replicas=2, down_window_s=600, down_percent=None,
                              down_pods=1, down_period_s=120, schedule=floors), cluster, lessons)
    # bursts on the hour outrun a GPU node's arrival unless the pool is there first
    assert reactive["lessons_lost"] > 100
    assert planned["lessons_lost"] < reactive["lessons_lost"] / 10
    assert planned["gpu_hours"] < 0.7 * static["gpu_hours"]
