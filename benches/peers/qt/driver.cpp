// Drives Qt SCXML (QScxmlStateMachine) for the ors benchmark comparison.
// Usage: driver WORKLOAD FILE EVENTS ROUNDS
// Events are submitted one at a time and the event loop is run until the
// machine has processed each, so the measurement covers real processing.
// Prints one JSON line like `ors bench` does, after checking the outcome
// (final configuration / counter value).
#include <QCoreApplication>
#include <QElapsedTimer>
#include <QScxmlDataModel>
#include <QScxmlStateMachine>
#include <QStringList>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

static long resident_kib() {
    FILE *f = std::fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long kib = 0;
    while (std::fgets(line, sizeof line, f)) {
        if (std::sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    }
    std::fclose(f);
    return kib;
}

static std::string stats_json(std::vector<double> results) {
    std::vector<double> sorted = results;
    std::sort(sorted.begin(), sorted.end());
    std::string rounds;
    for (size_t i = 0; i < results.size(); i++) rounds += (i ? "," : "") + std::to_string(results[i]);
    return "{\"min\":" + std::to_string(sorted.front()) + ",\"median\":" + std::to_string(sorted[sorted.size() / 2]) +
           ",\"max\":" + std::to_string(sorted.back()) + ",\"rounds\":[" + rounds + "]}";
}

// Starts a machine from a file and runs the event loop until its first
// macrostep is done.
static QScxmlStateMachine *start_machine(const QString &file, const std::string &workload);

static void fail(const std::string &workload, const std::string &message) {
    std::fprintf(stderr, "qt %s: %s\n", workload.c_str(), message.c_str());
    std::exit(1);
}

static QScxmlStateMachine *start_machine(const QString &file, const std::string &workload) {
    QScxmlStateMachine *machine = QScxmlStateMachine::fromFile(file);
    if (!machine || !machine->parseErrors().isEmpty()) fail(workload, "cannot load the document");
    bool stable = false;
    QObject::connect(machine, &QScxmlStateMachine::reachedStableState, [&stable]() { stable = true; });
    machine->start();
    while (!stable) QCoreApplication::processEvents();
    QObject::disconnect(machine, &QScxmlStateMachine::reachedStableState, nullptr, nullptr);
    return machine;
}

int main(int argc, char **argv) {
    QCoreApplication app(argc, argv);
    if (argc < 5) {
        std::fprintf(stderr, "usage: driver WORKLOAD FILE EVENTS ROUNDS\n");
        return 2;
    }
    const std::string workload = argv[1];
    const QString file = QString::fromLocal8Bit(argv[2]);
    long events = std::atol(argv[3]);
    const int rounds = std::atoi(argv[4]);
    if (workload == "load-1000") {
        const long n = std::max(1L, events);
        std::vector<double> results;
        for (int r = 0; r < rounds; r++) {
            QElapsedTimer timer;
            timer.start();
            for (long i = 0; i < n; i++) {
                QScxmlStateMachine *m = start_machine(file, workload);
                if (!m->activeStateNames(false).contains(QStringLiteral("g0_s0"))) fail(workload, "did not start in g0_s0");
                delete m;
            }
            results.push_back(double(n) / (double(timer.nsecsElapsed()) / 1e9));
        }
        std::printf("{\"engine\":\"qt\",\"mode\":\"in-process\",\"workload\":\"load-1000\",\"unit\":\"loads/s\","
                    "\"check\":\"the large document parsed and started in g0_s0\",\"result\":%s}\n",
                    stats_json(results).c_str());
        return 0;
    }
    if (workload == "start-sessions") {
        std::vector<double> results;
        double per_session = 0;
        for (int r = 0; r < rounds; r++) {
            std::vector<QScxmlStateMachine *> live;
            const long before = resident_kib();
            QElapsedTimer timer;
            timer.start();
            for (long i = 0; i < events; i++) live.push_back(start_machine(file, workload));
            results.push_back(double(events) / (double(timer.nsecsElapsed()) / 1e9));
            if (r == 0) per_session = double(resident_kib() - before) / double(events);
            for (QScxmlStateMachine *m : live) {
                if (m->activeStateNames(false) != QStringList{QStringLiteral("waiting")}) fail(workload, "a session is not waiting");
                delete m;
            }
        }
        std::printf("{\"engine\":\"qt\",\"mode\":\"in-process\",\"workload\":\"start-sessions\",\"unit\":\"starts/s\","
                    "\"check\":\"%ld live sessions in 'waiting'\",\"result\":%s,\"rss_per_live_session_kib\":%f}\n",
                    events, stats_json(results).c_str(), per_session);
        return 0;
    }
    QStringList names;
    if (workload == "ping-pong" || workload == "ping-pong-data") {
        names << QStringLiteral("t");
    } else if (workload == "deep-wide") {
        names << QStringLiteral("e0") << QStringLiteral("e1") << QStringLiteral("e2") << QStringLiteral("e3");
        events -= events % 4;
    } else {
        fail(workload, "unknown workload");
    }

    std::vector<double> results;
    std::string check;
    for (int r = 0; r < rounds; r++) {
        QScxmlStateMachine *machine = QScxmlStateMachine::fromFile(file);
        if (!machine || !machine->parseErrors().isEmpty()) fail(workload, "cannot load the document");
        long processed = 0;
        QObject::connect(machine, &QScxmlStateMachine::reachedStableState, [&processed]() { processed++; });
        machine->start();
        while (!machine->isRunning() || processed == 0) QCoreApplication::processEvents();
        processed = 0;
        QElapsedTimer timer;
        timer.start();
        for (long i = 0; i < events; i++) {
            machine->submitEvent(names[int(i % names.size())]);
            while (processed <= i) QCoreApplication::processEvents();
        }
        const double secs = double(timer.nsecsElapsed()) / 1e9;
        results.push_back(double(events) / secs);

        QStringList active = machine->activeStateNames(false);
        active.sort();
        if (workload == "ping-pong") {
            const QString expected = events % 2 == 0 ? "a" : "b";
            if (active.join(",") != expected) fail(workload, "ended in " + active.join(",").toStdString());
            check = "configuration [" + expected.toStdString() + "] after " + std::to_string(events) + " events";
        } else if (workload == "ping-pong-data") {
            const long n = machine->dataModel()->scxmlProperty(QStringLiteral("n")).toLongLong();
            if (n != events) fail(workload, "n is " + std::to_string(n));
            check = "n == " + std::to_string(events);
        } else {
            QStringList leaves;
            for (const QString &s : active)
                if (s.endsWith("_x") || s.endsWith("_y")) leaves << s;
            if (leaves.join(" ") != "r0_x r1_x r2_x r3_x") fail(workload, "ended in " + leaves.join(" ").toStdString());
            check = "atomic [r0_x r1_x r2_x r3_x] after " + std::to_string(events) + " events";
        }
        delete machine;
    }
    std::vector<double> sorted = results;
    std::sort(sorted.begin(), sorted.end());
    std::string rounds_json;
    for (size_t i = 0; i < results.size(); i++) {
        rounds_json += (i ? "," : "") + std::to_string(results[i]);
    }
    std::printf(
        "{\"engine\":\"qt\",\"mode\":\"in-process\",\"workload\":\"%s\",\"unit\":\"events/s\",\"check\":\"%s\","
        "\"result\":{\"min\":%f,\"median\":%f,\"max\":%f,\"rounds\":[%s]}}\n",
        workload.c_str(), check.c_str(), sorted.front(), sorted[sorted.size() / 2], sorted.back(), rounds_json.c_str());
    return 0;
}
