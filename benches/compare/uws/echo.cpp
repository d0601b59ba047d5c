// uWebSockets (C++) echo server for the loopback comparison (issue 5), built by scripts/bench.sh.
//
//   echo PORT
//
// Written against uWebSockets v0.14 (the Hub API), the C++ sources that PyPI's `uWebSockets`
// sdist (0.14.x, the Python bindings) ships: Debian has no uWebSockets package and the
// current v20 sources (uSockets) are on no registry this machine reaches. Epoll backend, one
// thread. Every text/binary message is sent back as it came; TCP_NODELAY on each accepted
// socket as for the other servers. Prints `ready` once listening. (v0.14 batches its writes
// with TCP_CORK around each read: two setsockopt calls per wake-up, its own design.)
#include <uWS.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: echo PORT\n");
        return 2;
    }
    int port = std::atoi(argv[1]);
    uWS::Hub hub;
    hub.onConnection([](uWS::WebSocket<uWS::SERVER> *ws, uWS::HttpRequest) {
        int one = 1;
        setsockopt(ws->getFd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    });
    hub.onMessage([](uWS::WebSocket<uWS::SERVER> *ws, char *message, size_t length, uWS::OpCode opCode) {
        ws->send(message, length, opCode);
    });
    if (!hub.listen("127.0.0.1", port)) {
        std::fprintf(stderr, "listen on 127.0.0.1:%d failed\n", port);
        return 1;
    }
    std::printf("ready\n");
    std::fflush(stdout);
    hub.run();
    return 0;
}
