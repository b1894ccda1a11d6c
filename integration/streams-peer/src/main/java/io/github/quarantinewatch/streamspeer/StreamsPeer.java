package io.github.quarantinewatch.streamspeer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

/**
 * StreamsPeer is the Kafka Streams contender of the end-to-end benchmark: it
 * reads CloudTrail records (one record per Kafka value) from a topic and
 * writes every record that Elastic's rule "AWS IAM CompromisedKeyQuarantine
 * Policy Attached to User" reports, unchanged, to an output topic, with
 * processing.guarantee=exactly_once_v2.
 *
 * <p>The condition is the rule as quarantine-watch reads it: eventName equals
 * AttachUserPolicy, errorCode and errorMessage are absent, null or "", and
 * the requestParameters subtree contains AWSCompromisedKeyQuarantine in a key
 * or a textual value, case-sensitively. Each value is parsed with Jackson's
 * readTree, the way a typical Streams application would.
 *
 * <p>What it deliberately does not do: the other delivery shapes (S3 log
 * files, EventBridge, CloudWatch Logs, ECS) and dead letters. A value that
 * is not JSON is dropped; the benchmark writes none.
 */
public final class StreamsPeer {
  static final String MARKER = "AWSCompromisedKeyQuarantine";
  static final ObjectMapper MAPPER = new ObjectMapper();

  private StreamsPeer() {}

  static final String USAGE =
      "usage: java -jar streams-peer.jar --bootstrap-servers HOST:PORT --application-id ID\n"
          + "         --source-topic TOPIC --output-topic TOPIC [--threads N] [--config key=value]...\n";

  public static void main(String[] args) throws Exception {
    Map<String, String> opts = new java.util.HashMap<>();
    Properties extra = new Properties();
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (a.equals("-h") || a.equals("--help")) {
        System.out.print(USAGE);
        return;
      }
      if (!a.startsWith("--") || i + 1 >= args.length) {
        System.err.print("streams-peer: bad argument " + a + "\n" + USAGE);
        System.exit(2);
      }
      String v = args[++i];
      if (a.equals("--config")) {
        int eq = v.indexOf('=');
        if (eq <= 0) {
          System.err.println("streams-peer: --config " + v + ": want key=value");
          System.exit(2);
        }
        extra.put(v.substring(0, eq), v.substring(eq + 1));
        continue;
      }
      opts.put(a.substring(2), v);
    }
    for (String k : new String[] {"bootstrap-servers", "application-id", "source-topic", "output-topic"}) {
      if (!opts.containsKey(k)) {
        System.err.print("streams-peer: --" + k + " is required\n" + USAGE);
        System.exit(2);
      }
    }
    Path stateDir = Files.createTempDirectory("streams-peer-");

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, opts.get("application-id"));
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, opts.get("bootstrap-servers"));
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(opts.getOrDefault("threads", "1")));
    p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
    p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
    p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
    p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
    p.putAll(extra);

    StreamsBuilder b = new StreamsBuilder();
    b.stream(opts.get("source-topic"), Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
        .filter((k, v) -> matches(v))
        .to(opts.get("output-topic"), Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));

    KafkaStreams streams = new KafkaStreams(b.build(), p);
    CountDownLatch done = new CountDownLatch(1);
    AtomicInteger exit = new AtomicInteger();
    streams.setUncaughtExceptionHandler(
        e -> {
          System.err.println("streams-peer: stream thread failed: " + e);
          exit.set(1);
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    streams.setStateListener(
        (now, before) -> {
          System.err.println("streams-peer: state " + before + " -> " + now);
          if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
            done.countDown();
          }
        });
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close(Duration.ofSeconds(30));
                  deleteTree(streams, stateDir);
                  done.countDown();
                }));
    System.err.println(
        "streams-peer: kafka-streams "
            + AppInfoParser.getVersion()
            + ", java "
            + System.getProperty("java.version")
            + ", "
            + p.get(StreamsConfig.NUM_STREAM_THREADS_CONFIG)
            + " stream thread(s), exactly_once_v2");
    streams.start();
    done.await();
    streams.close(Duration.ofSeconds(30));
    deleteTree(streams, stateDir);
    System.exit(exit.get());
  }

  /** deleteTree removes the state directory, which a stateless topology leaves (nearly) empty. */
  static void deleteTree(KafkaStreams streams, Path dir) {
    try {
      streams.cleanUp();
    } catch (IllegalStateException e) {
      // Still running after close timed out: remove what we can.
    }
    if (!Files.exists(dir)) {
      return;
    }
    try (java.util.stream.Stream<Path> paths = Files.walk(dir)) {
      paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException e) {
      System.err.println("streams-peer: removing " + dir + ": " + e);
    }
  }

  /** matches reports whether the rule reports the CloudTrail record v. */
  static boolean matches(byte[] v) {
    if (v == null) {
      return false;
    }
    JsonNode rec;
    try {
      rec = MAPPER.readTree(v);
    } catch (IOException e) {
      return false;
    }
    if (rec == null || !rec.isObject()) {
      return false;
    }
    JsonNode name = rec.get("eventName");
    if (name == null || !name.isTextual() || !name.textValue().equals("AttachUserPolicy")) {
      return false;
    }
    if (nonEmpty(rec.get("errorCode")) || nonEmpty(rec.get("errorMessage"))) {
      return false;
    }
    return contains(rec.get("requestParameters"));
  }

  /** nonEmpty: Elastic drops null and "" before it decides event.outcome. */
  static boolean nonEmpty(JsonNode n) {
    return n != null && !n.isNull() && !(n.isTextual() && n.textValue().isEmpty());
  }

  /** contains is stringContains over flattened parameters: any key or textual value, at any depth. */
  static boolean contains(JsonNode n) {
    if (n == null) {
      return false;
    }
    if (n.isTextual()) {
      return n.textValue().contains(MARKER);
    }
    if (n.isObject()) {
      for (Map.Entry<String, JsonNode> e : n.properties()) {
        if (e.getKey().contains(MARKER) || contains(e.getValue())) {
          return true;
        }
      }
      return false;
    }
    if (n.isArray()) {
      for (JsonNode e : n) {
        if (contains(e)) {
          return true;
        }
      }
    }
    return false;
  }
}
