from flows.deploy import DEFAULT_CRON, retrain_deployment


def test_retrain_deployment_has_cron_schedule_and_parameters():
    dep = retrain_deployment(cron="15 2 * * *", params_path="profiles/paper.yaml", root="/srv/get3d")
    assert dep.name == "retrain"
    crons = [s.schedule.cron for s in dep.schedules]
    assert crons == ["15 2 * * *"]
    assert dep.parameters == {"params_path": "profiles/paper.yaml", "root": "/srv/get3d"}
    assert DEFAULT_CRON.count(" ") == 4
