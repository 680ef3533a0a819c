"""Common-messaging queue providers: ``MessageQueueTrigger(scheme="dcache+sse" | "dcache+billing", ...)``."""
