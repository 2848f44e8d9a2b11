// The RabbitMQ adapter (shared/amqp.ts) against the Broker behaviours the in-process
// broker also passes; each test gets its own vhost.
import { pollUntil } from "../shared/async.ts";
import { connectAmqp } from "../shared/amqp.ts";
import { createLogger } from "../shared/log.ts";
import { createVhost } from "../testing/broker.ts";
import { brokerConformance } from "../testing/broker_conformance.ts";

brokerConformance({
  name: "RabbitMQ",
  open: async ({ deliveryLimit, isTransient }) => {
    const vhost = await createVhost();
    const broker = await connectAmqp({
      url: vhost.url,
      logger: createLogger("test", "error", {}, () => {}),
      deliveryLimit,
      isTransient,
    });
    await pollUntil(() => broker.isReady(), { timeoutMs: 15_000, what: "the broker" });
    return {
      broker,
      dispose: async () => {
        await broker.close();
        await vhost.drop();
      },
    };
  },
});
