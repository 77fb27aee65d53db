// Sample: how ScyllaDB's sources declare injection points (scanned by --points).
future<> storage_service::stream_tablet(locator::global_tablet_id tablet) {
    co_await utils::get_local_injector().inject("stream_tablet_before_send",
            utils::wait_for_message(std::chrono::minutes(5)));
    co_await utils::get_local_injector().inject("block_tablet_streaming", [&] (auto& handler) -> future<> {
        if (tablet.table != handler.get("table")) {
            co_return;
        }
        slogger.info("block_tablet_streaming: waiting");
        while (!handler.poll_for_message()) {
            co_await sleep_abortable(std::chrono::milliseconds(5), _abort_source);
        }
    });
    co_await utils::get_local_injector().inject("raft/apply-entry", utils::wait_for_message{std::chrono::seconds(60)});
    utils::get_local_injector().inject("storage_service_drop_ack", [] { throw std::runtime_error("drop"); });
}
