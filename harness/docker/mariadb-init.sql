-- Run once by the mariadb image's entrypoint (docker-compose.yml mounts it into
-- /docker-entrypoint-initdb.d/), after it created MARIADB_USER. The harness needs the
-- test user to create databases and kill sessions, as it can on its local servers.
GRANT ALL PRIVILEGES ON *.* TO 'tether'@'%' WITH GRANT OPTION;
