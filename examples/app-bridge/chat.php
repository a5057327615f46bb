<?php
// A chat app behind wssd, in PHP: on `open` it checks the token in the query string, binds the
// connection to its user and joins the room it asks for; a client without a valid token gets
// 401 and its WebSocket never opens. Messages come back signed with the user's name.
//
//   php -S 127.0.0.1:8000 examples/app-bridge/chat.php
//   wssd --app http://127.0.0.1:8000/
//   new WebSocket("wss://localhost:8282/?token=alice-secret&room=lobby")

// Tokens would come from your login system; these two stand in for it.
const USERS = ['alice-secret' => 'alice', 'bob-secret' => 'bob'];

$event = json_decode(file_get_contents('php://input'), true);
header('Content-Type: application/json');

switch ($event['event'] ?? '') {
    case 'open':
        parse_str($event['query'] ?? '', $query);
        $user = USERS[$query['token'] ?? ''] ?? null;
        if ($user === null) {
            http_response_code(401);
            echo 'bad token';
            break;
        }
        $room = preg_replace('/[^a-z0-9_-]/i', '', $query['room'] ?? 'lobby') ?: 'lobby';
        $answer = [
            'user' => $user,
            'join' => [$room],
            'send' => [['text' => "welcome $user, you are in $room"]],
        ];
        // new WebSocket(url, ["chat.v1"]): this app speaks chat.v1, and says so in the 101.
        if (in_array('chat.v1', $event['subprotocols'], true)) {
            $answer['subprotocol'] = 'chat.v1';
        }
        echo json_encode($answer);
        break;
    case 'message':
        $text = $event['text'] ?? '(binary)';
        echo json_encode(['send' => [['text' => "{$event['user']}: $text"]]]);
        break;
    default:
        echo '{}';
}
