"""A server folder follows its distribution's plugins: new jars in, old versions out, the user's kept."""

from circuit_atlas.local_server import Distribution, LocalServer, ServerSettings


def distribution(root, *jars):
    (root / "plugins").mkdir(parents=True)
    for jar in jars:
        (root / "plugins" / jar).write_bytes(jar.encode())
    return Distribution(root)


def test_plugins_follow_the_distribution_and_keep_the_users_jars(tmp_path):
    home = tmp_path / "server"
    (home / "plugins").mkdir(parents=True)
    (home / "plugins" / "mine-1.0.jar").write_bytes(b"user's own plugin")
    LocalServer(home, distribution(tmp_path / "old", "apoc-1.jar", "gds-1.jar"))._prepare_home(ServerSettings())
    assert sorted(p.name for p in (home / "plugins").glob("*.jar")) == ["apoc-1.jar", "gds-1.jar", "mine-1.0.jar"]

    LocalServer(home, distribution(tmp_path / "new", "apoc-2.jar", "gds-1.jar"))._prepare_home(ServerSettings())
    assert sorted(p.name for p in (home / "plugins").glob("*.jar")) == ["apoc-2.jar", "gds-1.jar", "mine-1.0.jar"]
    assert (home / "plugins" / "apoc-2.jar").read_bytes() == b"apoc-2.jar"
