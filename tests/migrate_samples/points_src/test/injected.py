"""Sample: a Python service using this package's injector (scanned by --points)."""


async def handle(handler):
    await handler.wait_for_message(5)


async def apply(injector, entry):
    await injector.inject_wait_for_message("py_apply_pause")
    await injector.inject_handler("py_apply_handler", handle)
