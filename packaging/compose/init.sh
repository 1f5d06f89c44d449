#!/bin/sh
# One-time initialization of the Compose cluster (compose.yaml, service
# init). Each step runs once: a later `up` finds its result in the keys
# volume and skips it.
set -eu
umask 077
addr=http://172.28.0.11:7070,http://172.28.0.12:7070,http://172.28.0.13:7070

# The first super-admin API key, saved with the address in
# $XDG_CONFIG_HOME/ffrtmp/config.json. The servers form the cluster
# within seconds of each other's start; until then init is refused.
if [ ! -s "$XDG_CONFIG_HOME/ffrtmp/config.json" ]; then
	tries=0
	until ffrtmp cluster init --addr "$addr" --cluster-key-file /keys/cluster.key; do
		tries=$((tries + 1))
		if [ "$tries" -ge 60 ]; then
			echo "init: the servers did not form a cluster within 2 minutes; see docker compose logs server1" >&2
			exit 1
		fi
		sleep 2
	done
fi

# A worker token per worker (a token serves one worker), and the cluster
# CA hash that workers pin, printed with every token.
for w in worker1 worker2; do
	if [ ! -s "/keys/$w.token" ]; then
		ffrtmp workers token create --name "$w" > "/keys/$w.token.new" 2> "/keys/$w.info"
		mv "/keys/$w.token.new" "/keys/$w.token"
		sed -n 's/.*--ca-hash \(sha256:[0-9a-f]*\).*/\1/p' "/keys/$w.info" > /keys/ca-hash
	fi
done
test -s /keys/ca-hash

# Prometheus's key: the super-admin's, narrowed to metrics.view, so that
# it can read /metrics (which names every tenant) and nothing else.
if [ ! -s /keys/prometheus.key ]; then
	ffrtmp users create-key --user admin@localhost --scopes metrics.view --name prometheus > /keys/prometheus.key.new
	mv /keys/prometheus.key.new /keys/prometheus.key
fi
echo "init: done; the CLI: docker compose -f packaging/compose/compose.yaml run --rm cli cluster status"
