"""The order in which `make test` (pytest -n 2 --dist loadfile) hands the test files to its workers.

xdist's default sends the files with the most tests first, which puts the slow files of one test
(test_reference_run, test_gen_image_devices, test_fit_views) last, where one of them can run alone
on one worker after the other worker has finished. Here the files go out slowest first, so that
the short files at the end even out the two workers. The order only schedules: every test runs
as before, each file in one worker.
"""

# Slowest first, by the seconds each file took on one worker of a 2-core machine; files not
# listed follow in their usual order. A file missing here or out of place only costs time.
SLOWEST_FIRST = (
    "test_train.py",
    "test_train_many.py",
    "test_render.py",
    "test_pose_stage.py",
    "test_reference_run.py",
    "test_field.py",
    "test_if_unet.py",
    "test_body_render.py",
    "test_gen_image_devices.py",
    "test_reference_scene.py",
    "test_sds.py",
    "test_body_model.py",
    "test_sampling.py",
    "test_fit_views.py",
    "test_report.py",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist's reordering by test count
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
