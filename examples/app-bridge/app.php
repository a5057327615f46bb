<?php
// The recipe's app behind wssd, in PHP: the `onMessage` that answers every message with "ok".
//
//   php -S 127.0.0.1:8000 examples/app-bridge/app.php     (PHP_CLI_SERVER_WORKERS=4 for concurrency)
//   wssd --app http://127.0.0.1:8000/
//
// wssd POSTs one JSON document per event: {"event": "open" | "message" | "close", "id": ...}.
// The answer (JSON, every field optional) says what wssd does for this connection:
//   {"send": [{"text": "ok"}], "user": "42", "join": ["room1"], "leave": [], "close": {"code": 4000}}
// To `open`, any 2xx lets the client in, and a 4xx keeps it out with that status.

$event = json_decode(file_get_contents('php://input'), true);
header('Content-Type: application/json');

switch ($event['event'] ?? '') {
    case 'open':
        // Everyone may connect; see chat.php for a token check.
        echo '{}';
        break;
    case 'message':
        // The recipe's onMessage: $connection->send('ok');
        echo json_encode(['send' => [['text' => 'ok']]]);
        break;
    case 'close':
        echo '{}';
        break;
    default:
        http_response_code(400);
        echo json_encode(['error' => 'not a wssd event']);
}
