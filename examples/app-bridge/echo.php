<?php
// An echo app behind wssd, in PHP: each message comes back as it was sent (text as text,
// binary as binary). scripts/bench-bridge measures the bridge with it.
//
//   php -S 127.0.0.1:8000 examples/app-bridge/echo.php
//   wssd --app http://127.0.0.1:8000/

$event = json_decode(file_get_contents('php://input'), true);
header('Content-Type: application/json');
if (($event['event'] ?? '') === 'message') {
    $message = isset($event['text']) ? ['text' => $event['text']] : ['binary' => $event['binary']];
    echo json_encode(['send' => [$message]]);
} else {
    echo '{}';
}
