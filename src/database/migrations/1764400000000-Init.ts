export class Init1764400000000 { name = "Init1764400000000"; async up() {} async down() {} }
