#!/bin/bash
# Entrypoint of the local Apache Kafka image (see build.sh).
#
# It takes the environment interface of the official apache/kafka image, so a
# test can run either image with the same settings:
#
#   - every KAFKA_FOO_BAR=x variable becomes foo.bar=x in server.properties,
#     with the official image's escapes: "___" (three) stands for "-" and
#     "__" (two) for "_", e.g. KAFKA_LISTENER_NAME_CONTROLLER___X=1 gives
#     listener.name.controller-x=1. The variables that configure the JVM or
#     logging rather than the broker are left out (see not_a_property);
#   - CLUSTER_ID names the cluster when the storage is formatted; the default
#     is the official image's;
#   - KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS and KAFKA_OPTS are JVM
#     options, KAFKA_LOG4J_ROOT_LOGLEVEL and KAFKA_LOG4J_LOGGERS
#     ("logger=LEVEL,...") set log levels, as kafka-run-class.sh does.
#
# The storage is formatted only where it is not formatted yet, so a container
# that is stopped (or killed) and started again comes back with its data.
#
# What it deliberately does not do: the official image's SSL and SASL file
# handling, mounted config files under /mnt/shared/config, and running as a
# non-root user. Tests need none of them.
set -euo pipefail

KAFKA_DIR=/opt/kafka
CONFIG_DIR="$KAFKA_DIR/config"
SERVER_PROPS="$CONFIG_DIR/server.properties"

log() { echo "===> $*"; }
die() { echo "entrypoint: $*" >&2; exit 1; }

# Same default as the official image's configureDefaults script.
: "${CLUSTER_ID:=5L6g3nShT-eMCtK--X86sw}"

# not_a_property NAME succeeds for the KAFKA_ variables that are not broker
# properties: the official image's exclusion list, plus KAFKA_HEAP_OPTS (that
# list spells it KAFKA_HEAP_OPT) and KAFKA_HOME.
not_a_property() {
  case "$1" in
    KAFKA_VERSION | KAFKA_HEAP_OPT | KAFKA_HEAP_OPTS | KAFKA_LOG4J_OPTS | KAFKA_OPTS | \
      KAFKA_JMX_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_GC_LOG_OPTS | \
      KAFKA_LOG4J_ROOT_LOGLEVEL | KAFKA_LOG4J_LOGGERS | KAFKA_TOOLS_LOG4J_LOGLEVEL | \
      KAFKA_JMX_HOSTNAME | KAFKA_HOME)
      return 0
      ;;
  esac
  return 1
}

# property_name KAFKA_FOO_BAR prints foo.bar, as the official image's
# KafkaDockerWrapper.getServerConfigsFromEnv does.
property_name() {
  local key="${1#KAFKA_}"
  key="${key,,}"
  key="${key//_/.}"
  key="${key//.../-}"
  key="${key//../_}"
  printf '%s' "$key"
}

# property_value NAME prints the value of NAME in $SERVER_PROPS (last wins,
# as in java.util.Properties), or nothing.
property_value() {
  local name="$1" line value=""
  while IFS= read -r line; do
    if [[ "$line" == "$name="* ]]; then
      value="${line#*=}"
    fi
  done <"$SERVER_PROPS"
  printf '%s' "$value"
}

write_server_properties() {
  local var
  mkdir -p "$CONFIG_DIR"
  : >"$SERVER_PROPS"
  # compgen -e lists exported variable names only.
  while IFS= read -r var; do
    [[ "$var" == KAFKA_* ]] || continue
    not_a_property "$var" && continue
    printf '%s=%s\n' "$(property_name "$var")" "${!var}" >>"$SERVER_PROPS"
  done < <(compgen -e | LC_ALL=C sort)
  [[ -s "$SERVER_PROPS" ]] || die "no KAFKA_* variable is set: nothing to configure the broker with (set at least KAFKA_NODE_ID, KAFKA_PROCESS_ROLES, KAFKA_LISTENERS, KAFKA_CONTROLLER_QUORUM_VOTERS, KAFKA_CONTROLLER_LISTENER_NAMES)"
}

write_log4j_properties() {
  local level="${KAFKA_LOG4J_ROOT_LOGLEVEL:-INFO}" spec name lvl i=0
  cat >"$CONFIG_DIR/log4j2.properties" <<EOF
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $level
rootLogger.appenderRef.stdout.ref = STDOUT
EOF
  if [[ -n "${KAFKA_LOG4J_LOGGERS:-}" ]]; then
    IFS=',' read -r -a specs <<<"$KAFKA_LOG4J_LOGGERS"
    for spec in "${specs[@]}"; do
      name="${spec%%=*}"
      lvl="${spec#*=}"
      [[ -n "$name" && "$spec" == *=* ]] || die "KAFKA_LOG4J_LOGGERS: want logger=LEVEL[,logger=LEVEL...], got '$spec'"
      i=$((i + 1))
      printf 'logger.l%d.name = %s\nlogger.l%d.level = %s\n' "$i" "$name" "$i" "$lvl" >>"$CONFIG_DIR/log4j2.properties"
    done
  fi
}

# format_storage_if_needed formats the log directories unless every one of
# them (and the metadata directory) already holds a meta.properties.
format_storage_if_needed() {
  local dirs dir needed=0
  dirs="$(property_value log.dirs)"
  [[ -n "$dirs" ]] || dirs="$(property_value log.dir)"
  [[ -n "$dirs" ]] || dirs=/tmp/kafka-logs # Kafka's own default
  local meta
  meta="$(property_value metadata.log.dir)"
  [[ -z "$meta" ]] || dirs="$dirs,$meta"
  IFS=',' read -r -a dir_list <<<"$dirs"
  for dir in "${dir_list[@]}"; do
    [[ -f "$dir/meta.properties" ]] || needed=1
  done
  if ((needed == 0)); then
    log "Storage in $dirs is already formatted"
    return
  fi
  log "Formatting storage in $dirs with cluster id $CLUSTER_ID"
  "${JAVA[@]}" -Xmx256m -cp "$KAFKA_DIR/libs/*" \
    -Dlog4j2.configurationFile="file:$CONFIG_DIR/log4j2.properties" \
    kafka.tools.StorageTool format --ignore-formatted \
    --cluster-id="$CLUSTER_ID" --config "$SERVER_PROPS"
}

main() {
  local java_bin
  java_bin="$(command -v java)" || die "java not found in PATH"
  JAVA=("$java_bin")

  write_server_properties
  write_log4j_properties
  log "server.properties:"
  sed 's/^/    /' "$SERVER_PROPS"
  format_storage_if_needed

  # The defaults are kafka-run-class.sh's, with a heap sized for tests.
  local heap="${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m}"
  local perf="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}"
  local log4j="${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=file:$CONFIG_DIR/log4j2.properties}"
  log "Launching Kafka"
  # Word splitting of the option strings is intended, as in kafka-run-class.sh.
  # shellcheck disable=SC2086
  exec "${JAVA[@]}" $heap $perf $log4j ${KAFKA_OPTS:-} \
    -cp "$KAFKA_DIR/libs/*" kafka.Kafka "$SERVER_PROPS"
}

main "$@"
