// The in-process broker against the same behaviours as RabbitMQ.
import { createLogger } from "../shared/log.ts";
import { brokerConformance } from "../testing/broker_conformance.ts";
import { MemoryBroker } from "./memory_broker.ts";

brokerConformance({
  name: "in-process broker",
  open: ({ deliveryLimit, isTransient }) => {
    const broker = new MemoryBroker(createLogger("test", "error", {}, () => {}), {
      deliveryLimit,
      isTransient,
    });
    return Promise.resolve({ broker, dispose: () => broker.close() });
  },
});
